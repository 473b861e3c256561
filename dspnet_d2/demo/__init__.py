"""The embedded demo data (``data``: generated, nothing downloaded) and the test and benchmark fixtures built
from the same drawing code (``fixtures``)."""

"""The detectron2 half of the package: ``config`` (no detectron2 import), ``backbone`` and ``checkpoint``
(both need detectron2, which is not on PyPI; importing them without it raises an ImportError that says
how to install it). Everything outside this folder works without detectron2."""

INSTALL_URL = "https://detectron2.readthedocs.io/en/latest/tutorials/install.html"


def require_detectron2(user: str) -> None:
    """Raise an ImportError naming ``user`` and the install instructions when detectron2 is absent."""
    try:
        import detectron2  # noqa: F401
    except ImportError as err:
        raise ImportError(f"{user} needs detectron2, which is not on PyPI: install it from its official "
                          f"source ({INSTALL_URL})") from err

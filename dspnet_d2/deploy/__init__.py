"""What is done with a trained DN: its static network (``export``), deployable files and their parity checks
(``formats``), detectron2 weights (``convert``), the commands over DN files, and choosing a DN for a device
(``selection``)."""

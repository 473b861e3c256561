"""Slimmable supervised training (the paper's Appendix B), from random init, DSPNet or BYOL weights."""

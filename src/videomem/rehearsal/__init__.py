"""The dress rehearsal of the paper recipe on one CPU machine (``make rehearse``): ``rehearsal/stages.py``."""

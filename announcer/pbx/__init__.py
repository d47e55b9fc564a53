"""What Asterisk talks to: the FastAGI server (``agi``)."""

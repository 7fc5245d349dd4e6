"""I/O at the bottom: the SQLAlchemy store and its migrations."""

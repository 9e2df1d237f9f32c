"""Scheduled export jobs: measurements and the catalog, per local period, to HTTPS or SFTP."""

"""The ground floor every layer may use: errors, atomic files, the one checksum manifest, statistics. Imports nothing else of physai."""

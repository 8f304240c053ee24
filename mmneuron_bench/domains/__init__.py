"""Domains are lmms-eval tasks: finding them, listing them, reading their documents."""

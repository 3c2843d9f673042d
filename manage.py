#!/usr/bin/env python
"""Django's command-line utility. The role defaults to write; set DJANGO_SETTINGS_MODULE for others."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cqrs_site.settings.write")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()

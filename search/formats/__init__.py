"""Text in and out: pydantic validation errors as one line (YAML files), JSON that strict parsers accept, URLs
without their secrets, the command's exit statuses. Imports nothing from the other :mod:`search` packages."""

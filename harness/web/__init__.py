"""The report page: HTML template (page.html), its sections and inline SVG charts."""

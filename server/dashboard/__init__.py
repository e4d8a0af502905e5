"""The dashboard's page: index.html, app.js and app.css, served by handlers/dashboard.py."""

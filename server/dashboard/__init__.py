"""The live dashboard's page: index.html, app.js and app.css, served by the same process."""

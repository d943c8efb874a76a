"""The prediction API: `uvicorn --factory app.main:create_app` (or `invoke serve`).

Importing this package does no work: settings, the model and the routes are built by
`app.main.create_app`, so tests build apps with their own settings.
"""

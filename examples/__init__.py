"""Your own routes with FitFlix: a blueprint in create_app, or another Flask app with fitflix.init_app."""

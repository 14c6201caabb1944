"""A FitFlix API blueprint: your own routes, a module-level object, passed to create_app (see wsgi_with_api.py).

Errors are raised, not answered: `abort(404)` becomes the same JSON 404 as any
unknown path, with the same headers, because create_app registers the handlers
for the whole app.
"""

from __future__ import annotations

from flask import Blueprint, abort, jsonify

workouts = Blueprint("workouts", __name__, url_prefix="/api/workouts")

# A stand-in for a database: the point is where the routes go, not the data.
WORKOUTS = {
    1: {"id": 1, "title": "Morning mobility", "minutes": 15},
    2: {"id": 2, "title": "Intervals on the bike", "minutes": 30},
}


@workouts.get("")
def list_workouts():
    return jsonify(workouts=list(WORKOUTS.values()))


@workouts.get("/<int:workout_id>")
def get_workout(workout_id: int):
    workout = WORKOUTS.get(workout_id)
    if workout is None:
        abort(404, description=f"No workout {workout_id}.")
    return jsonify(workout)

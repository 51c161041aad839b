"""Layer shapes at equal FLOPs (``python -m analyze shapes``): families → measure (the cost profiler) → report, figures; cli."""

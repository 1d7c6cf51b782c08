"""The method's parts: the expert folder and the encoders drawn from it, the losses of both views, the update
schedules, and the run's folder and books. DANCE.py puts them together."""

"""The runtime: the app's state, composed of narrow services (runtime.py composes them).

Kept empty of imports: launch.py reads the saved options (options.py) with the system
Python before the venv, where torch is not installed."""

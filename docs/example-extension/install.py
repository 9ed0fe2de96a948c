"""Runs in Kiln's venv, in this folder, when the extension is new or changed (launch.py at
start, or right after "Install from URL"). Install what the scripts import here."""
import launch

# Pillow comes with Kiln; an extension needing more would call
# launch.run_pip("install some-package==1.2.3", "some-package for Kiln example")
if not launch.is_installed("Pillow"):
    launch.run_pip("install Pillow", "Pillow for Kiln example")
print("Kiln example: nothing else to install")

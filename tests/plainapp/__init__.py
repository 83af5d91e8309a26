"""An adopter's app in a project that `startproject` made: its daemon logs through the app's own logger."""

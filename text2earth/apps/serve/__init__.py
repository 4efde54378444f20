"""The local web app of ``text2earth serve``: map, generate, edit, grow, download (see the README, "On the map")."""

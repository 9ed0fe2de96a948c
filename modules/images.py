"""A1111's `modules.images`, for extension scripts: save a picture with its infotext, make
grids. The engine's own code is modules/files/images.py; this file only names it.

Kiln's signatures (documented in docs/extensions.md): `save_image(image, folder,
stem_suffix, infotext) -> Path`, `image_grid(images, rows=None)`, `dated_folder(root,
kind)`, and labelled grids (`GridLabel`, `labelled_grid`) for plot scripts."""
from modules.files.images import GridLabel, dated_folder, image_grid, labelled_grid, save_image

__all__ = ["save_image", "image_grid", "dated_folder", "GridLabel", "labelled_grid"]

"""The files users keep (stats, masks, edits) and the outputs written beside them."""

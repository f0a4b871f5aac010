"""Pure tensor functions shared by models and engine (colour, padding, blend windows, checks)."""

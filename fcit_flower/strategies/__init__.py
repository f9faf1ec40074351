"""Server strategies (Flower) and their pure helpers."""

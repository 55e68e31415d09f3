"""Generators: answers from the top chunks."""

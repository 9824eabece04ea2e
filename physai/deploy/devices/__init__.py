"""Modeled compute budgets: what a bundle would cost on a target we cannot measure here."""

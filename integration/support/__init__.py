"""Helpers the lab tests share; no test module imports from another, nor from conftest."""

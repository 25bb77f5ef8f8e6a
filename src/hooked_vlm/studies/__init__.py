"""Runnable studies: data + model + analysis -> a results directory, resumable."""

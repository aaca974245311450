"""`make bench-vs-mlflow`: MLflow and Cairn side by side, one after the other, in one run."""

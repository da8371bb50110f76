"""Training: the code behind train_model.py and hpo.py."""

"""Training: LightningModules ("recipes") per method, the shared DataModule and the train engine."""

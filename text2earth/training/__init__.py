"""Training: LightningModules, task variants, optimiser recipe, EMA weights, export, the fit run."""

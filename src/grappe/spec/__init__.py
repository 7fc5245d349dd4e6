"""Documents users and operators write: job specs and factory.yaml."""

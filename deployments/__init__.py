"""How lmforge's flows are scheduled and run for teams: a deployment per flow built from a
config (`deployments.build`, behind `lmforge serve` and `lmforge deploy`), and `prefect.yaml`
at the repository root for `prefect deploy --all`."""

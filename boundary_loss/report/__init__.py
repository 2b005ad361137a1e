"""From run folders to a report: each run's summary (`runs`, `summary`), the page and its sections
(`page`, `sections`), paired statistics (`paired`), per-patient tables (`patients`), plots
(`plot`) and pictures (`pictures`)."""

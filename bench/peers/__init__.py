"""The peers' Django glue: their tasks, doing the same onboarding work as ours."""

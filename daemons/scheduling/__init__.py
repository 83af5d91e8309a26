"""When a job runs: schedules as pure functions of now, and the daemons that run jobs on them."""

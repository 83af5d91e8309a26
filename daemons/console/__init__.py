"""What runs in the operator's shell or the web process: start, stop, status, deployment files, health."""

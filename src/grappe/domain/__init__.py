"""Pure domain types: resources, sites, jobs and their state machine, projects."""

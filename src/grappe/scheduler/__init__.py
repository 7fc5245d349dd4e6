"""The scheduler: the global queue, its policies, and the loop that releases jobs to sites."""

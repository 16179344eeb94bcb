"""What every benchmark server does first: one descriptor per client, and
thousands of clients need more than the usual soft limit of 1024."""

import resource


def raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

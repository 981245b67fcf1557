"""dfd's HTTP gateway: validate, rate-limit, enqueue, report.

It imports no media or ML library: jobs are enqueued by function path
(``dispatcher.jobs.run_job``) and run by ``dfd worker`` processes.
"""

"""mode=plan: compile a recipe's own jitted programs for its target mesh and say whether it fits.

    job        the job (`run`): target devices, the plan, proposals, the report
    planner    one recipe planned for one target: `make_plan` -> `Plan`
    programs   the job's programs compiled for abstract inputs; XLA's memory and cost figures
    shapes     the worst-case inputs a recipe allows (host side)
    analytic   the arithmetic beside XLA's figures
    proposals  overrides that lower the peak, each planned again
    report     plan.md, plan.json and the table on stdout
    options    config.plan (PlanConfig)
"""


def run(config, workdir: str) -> dict:
    """The planning job (mmjax.jobs.plan.job.run); imported here so `mode=plan` dispatches to it."""
    from mmjax.jobs.plan import job  # pylint: disable=g-import-not-at-top  (jax only when the job runs)
    return job.run(config, workdir)

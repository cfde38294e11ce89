"""Evaluation, in one package: `vqa` (exact-match questions with the blank-image control and the chance baseline),
`actions` (offline action metrics on held-out demonstrations with the language-blind control), `closed_loop`
(rollouts of a checkpoint or a scripted expert with their controls, `vlx eval`) and `task_suite` (multi-task
Meta-World suites). Import the module you need; this package imports nothing itself, so that reading a question
file does not load the environments.
"""

"""``Job.copy``: as deep as the JSON round trip it replaced, and cheaper."""

from __future__ import annotations

from chimera.events import Draft, Event, JobState, TeamName, utc_now
from chimera.job import Job, TeamRun


def a_job() -> Job:
    now = utc_now()
    job = Job(
        job_id="copied",
        brief="a login form",
        teams={team: TeamRun(team) for team in TeamName},
        create_time=now,
        update_time=now,
        request_id="r-1",
        owner="alice",
    )
    drafts = [
        Draft.status("copied", TeamName.ANTHROPIC, "thinking", model="m"),
        Draft.thought("copied", TeamName.ANTHROPIC, "first, a form"),
        Draft.code("copied", TeamName.GOOGLE, "<form></form>", "html", 12),
    ]
    for seq, draft in enumerate(drafts, 1):
        job.apply(Event.from_draft(draft, seq))
    return job


def test_a_copy_equals_the_json_round_trip_and_shares_nothing_mutable() -> None:
    job = a_job()
    copy = job.copy()
    assert copy == Job.from_json(job.to_json()) == job
    assert copy.teams is not job.teams
    for team, run in copy.teams.items():
        assert run is not job.teams[team]
        assert run.thoughts is not job.teams[team].thoughts
    before = job.to_json()
    copy.apply(Event.from_draft(Draft.thought("copied", TeamName.ANTHROPIC, "then"), 4))
    copy.apply(Event.from_draft(Draft.status("copied", None, JobState.SUCCEEDED.value), 5))
    assert job.to_json() == before  # the original is untouched
    assert copy.state is JobState.SUCCEEDED and copy.last_sequence == 5

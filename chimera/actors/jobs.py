"""The job manager: creates jobs, owns their supervisors, cancels them.

Lifecycle: :meth:`JobManager.recover` once at start-up (jobs a crash left
``running`` are closed as failed), then :meth:`JobManager.run` owns every
supervisor in one ``TaskGroup`` until :meth:`JobManager.stop`, which interrupts
the running jobs; ``run`` returns once each has published its final event.
Before that, :meth:`JobManager.drain` may refuse new jobs (:class:`Draining`)
while the running ones go on; :meth:`JobManager.drained` returns once none is
left.

Scaled out (several processes on one Redis), ``recover`` runs periodically
and closes only jobs whose process is gone (``interrupted: node lost``), each
in exactly one survivor; a cancel for a job running elsewhere is relayed to
its process (:class:`CancelRelay`).

Wiring: the broadcaster is built before the job manager (which needs it), yet
tells it which jobs' events cannot be recorded. So both are handed one
:class:`RunningJobs`, built first: the broadcaster reports to it, the job
manager keeps its supervisors in it. Nothing is attached to either afterwards.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from chimera.actors.broadcaster import Broadcaster, Subscription
from chimera.actors.supervisor import INTERRUPTED, JobSupervisor
from chimera.actors.team import Publish, TeamActor
from chimera.auth.principal import Principal, Scope
from chimera.defaults import DEFAULT_MAX_JOBS_PER_CALLER, MAX_BRIEF_CHARS
from chimera.errors import (
    ChimeraError,
    Draining,
    FailedPrecondition,
    HistoryGone,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ShuttingDown,
    SinceTooLarge,
)
from chimera.events import (
    ALL_TEAMS,
    TEAM_FINAL,
    Draft,
    Event,
    JobState,
    TeamName,
    TeamStatus,
    utc_now,
)
from chimera.ids import check_epoch, check_job_id, check_text, new_job_id
from chimera.job import Job, JobView, TeamRun, thought_limit
from chimera.observability import metrics
from chimera.observability.logs import job_context
from chimera.providers.base import Provider
from chimera.store.base import Store

log = logging.getLogger(__name__)

MAX_REQUEST_ID_CHARS = 128
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100

ProviderFactory = Callable[[TeamName], Provider]
NODE_LOST = "interrupted: node lost"
CANCEL_RELAY_INTERVAL = 1.0


class CancelRelay(Protocol):
    """Reaches the process that runs a job (scale-out)."""

    async def request_cancel(self, job_id: str) -> None:
        """Asks whichever process runs ``job_id`` to cancel it (at most once
        delivered; the caller repeats until the job has ended)."""
        ...


@dataclass(frozen=True, slots=True)
class JobRequest:
    brief: str
    teams: Sequence[TeamName] = ()
    job_id: str = ""
    request_id: str = ""


async def close_as_failed(
    publish: Publish, job_id: str, unfinished: Iterable[TeamName], reason: str
) -> None:
    """Ends a job that cannot run on: each unfinished team gets an ``error`` event
    with ``reason`` and ends in ``error``, then the job's final ``failed`` event."""
    for team in unfinished:
        await publish(Draft.error(job_id, team, reason))
        await publish(Draft.status(job_id, team, TeamStatus.ERROR.value))
    await publish(Draft.status(job_id, None, JobState.FAILED.value))


class RunningJobs:
    """The supervisors of the jobs running in this process, by id, and why the store
    refused a job's events: the :class:`chimera.actors.broadcaster.RecordingListener`
    the broadcaster reports to, and the job manager's record of what it runs.

    Built first and given to both (see the module docstring).
    """

    def __init__(self) -> None:
        self.supervisors: dict[str, JobSupervisor] = {}
        # Why the store refused a job's events, until JobManager.recover() closes
        # the job or has had its one chance to (see recover()).
        self.rejected_reasons: dict[str, str] = {}

    def storage_failed(self, job_ids: list[str], error: ChimeraError) -> None:
        """The broadcaster cannot record these jobs' events: they stop and fail, saying
        why, once the store takes writes again."""
        for job_id in job_ids:
            supervisor = self.supervisors.get(job_id)
            if supervisor is not None:
                supervisor.interrupt(f"stopped: its events could not be recorded ({error})")

    def rejected(self, job_id: str, reason: str) -> None:
        """The store refused the job's events: stop its teams (nothing they
        produce can be recorded any more)."""
        supervisor = self.supervisors.get(job_id)
        if supervisor is not None:
            supervisor.interrupt()
        # If the store gives the job back to recover() (Redis answers again), it is
        # closed with this reason, not the generic one: also when its supervisor
        # ended first (its final events were among those refused).
        self.rejected_reasons[job_id] = reason


def _opened(job: Job, drafts: Sequence[Draft]) -> list[Event]:
    """A new job's opening ``drafts`` numbered from 1 and folded into ``job``."""
    events = [Event.from_draft(draft, seq) for seq, draft in enumerate(drafts, 1)]
    for event in events:
        job.apply(event)
    return events


class JobManager:
    def __init__(
        self,
        store: Store,
        broadcaster: Broadcaster,
        providers: ProviderFactory,
        *,
        running: RunningJobs,
        relay: CancelRelay | None = None,
        max_brief_chars: int = MAX_BRIEF_CHARS,
        job_deadline: float | None = None,
        max_jobs_per_caller: int = DEFAULT_MAX_JOBS_PER_CALLER,
    ) -> None:
        self._store = store
        self._broadcaster = broadcaster
        self._providers = providers
        self._max_brief_chars = max_brief_chars
        self._job_deadline = job_deadline
        self._max_jobs_per_caller = max_jobs_per_caller
        # The running jobs' supervisors and the reasons the store refused jobs' events:
        # the dicts of the RunningJobs the broadcaster reports to (module docstring).
        self._supervisors = running.supervisors
        self._rejected_reasons = running.rejected_reasons
        # Running (or being created) jobs per caller, for the in-flight limit.
        self._in_flight: dict[str, int] = {}
        # Set whenever no job is running or being created (drained() waits for it).
        self._idle = asyncio.Event()
        self._idle.set()
        self._draining = False
        self._tg: asyncio.TaskGroup | None = None
        self._stop = asyncio.Event()
        # Scaled out: reaches the process that runs a job (None in one process).
        self._relay = relay

    # -- lifecycle ---------------------------------------------------------------------

    async def recover(self, reason: str = INTERRUPTED) -> list[str]:
        """Closes jobs a crash left ``running``: teams end in ``error`` (``reason``),
        the job ``failed``.

        A job whose events the store refused here comes back from the first call
        after its refusal, if ever (the Redis store's stranded jobs); one that does
        not (taken over by another process, or lost with the data set) never
        will, so the reason kept for it is dropped then, not kept for good.
        """
        # Before the store is asked: a refusal recorded while it answers waits for
        # the next call. A job whose supervisor still runs waits too (skipped below).
        refused = [j for j in self._rejected_reasons if j not in self._supervisors]
        recovered = []
        for job in await self._store.unfinished_jobs():
            if job.job_id in self._supervisors:
                continue
            await self._broadcaster.adopt(job)
            unfinished = [run.team for run in job.teams.values() if run.status not in TEAM_FINAL]
            await close_as_failed(
                self._broadcaster.publish, job.job_id, unfinished,
                self._rejected_reasons.pop(job.job_id, reason),
            )
            metrics.job_recovered()
            recovered.append(job.job_id)
        for job_id in refused:
            if self._rejected_reasons.pop(job_id, None) is not None:
                self._broadcaster.forget_rejected(job_id)
        if recovered:
            log.warning("marked %d interrupted job(s) as failed", len(recovered))
        return recovered

    async def run(self) -> None:
        """Owns every job's tasks until :meth:`stop`; returns once they have ended.

        Cancelled, the jobs' tasks are cancelled with it. Either way no task is
        created on the group once its body has ended: :meth:`create` raises
        :class:`ShuttingDown` from then on (a creation already under way is a
        task of the group, so the group is still open for the job it starts).
        """
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            try:
                await self._stop.wait()
            finally:
                self._tg = None
            for supervisor in self._supervisors.values():
                supervisor.interrupt()

    def stop(self) -> None:
        """Refuses new jobs from now on and interrupts the running ones."""
        self._stop.set()

    def drain(self) -> None:
        """Refuses new jobs from now on (:class:`Draining`); the running ones go on."""
        self._draining = True

    async def drained(self) -> None:
        """Returns once no job runs here nor is being created (at once if none is)."""
        await self._idle.wait()

    def cancel_local(self, job_id: str) -> None:
        """Cancels ``job_id`` if it runs in this process (a relayed CancelJob)."""
        supervisor = self._supervisors.get(job_id)
        if supervisor is not None:
            supervisor.cancel()

    # -- operations ----------------------------------------------------------------------

    def _validate(self, request: JobRequest) -> tuple[str, tuple[TeamName, ...]]:
        """The job id and teams, or :class:`InvalidArgument`: the one check of a
        request's text for every plane, before anything reaches the store."""
        check_text("brief", request.brief)
        check_text("request_id", request.request_id)
        brief = request.brief.strip()
        if not brief:
            raise InvalidArgument("brief is empty: describe what the teams should build")
        if len(request.brief) > self._max_brief_chars:
            raise InvalidArgument(
                f"brief is {len(request.brief)} characters; the limit is "
                f"{self._max_brief_chars}: shorten it"
            )
        teams = tuple(request.teams) or ALL_TEAMS
        if len(set(teams)) != len(teams):
            raise InvalidArgument("teams lists a team more than once: list each team once")
        if len(request.request_id) > MAX_REQUEST_ID_CHARS:
            raise InvalidArgument(
                f"request_id is longer than {MAX_REQUEST_ID_CHARS} characters: shorten it"
            )
        job_id = check_job_id(request.job_id) if request.job_id else new_job_id()
        return job_id, teams

    async def create(
        self, request: JobRequest, *, principal: Principal, caller: str = ""
    ) -> Job:
        """Records the job (owned by ``principal.sub``) and starts its supervisor at once.

        The in-flight limit counts against the token's ``sub``, or against
        ``caller`` (the client's address) when the principal is anonymous.
        """
        principal.require(Scope.SUBMIT)
        if principal.job is not None:
            # A token for one job may create exactly that job.
            principal.check_job_id(request.job_id or principal.job)
            request = JobRequest(request.brief, request.teams, principal.job, request.request_id)
        job_id, teams = self._validate(request)
        if self._tg is None or self._stop.is_set():
            raise ShuttingDown("the server is shutting down and takes no new jobs")
        if self._draining:
            raise Draining("server is draining: submit to another server")
        if self._broadcaster.storage_error is not None:
            raise self._broadcaster.storage_error  # its events could not be recorded
        key = principal.sub if principal.authenticated else caller
        running = self._in_flight.get(key, 0)
        if running >= self._max_jobs_per_caller:
            raise ResourceExhausted(
                f"{running} of your jobs are running; the limit is {self._max_jobs_per_caller} "
                "per caller: wait for one to finish or cancel one"
            )
        # Reserved before the first await, so concurrent calls cannot pass the limit.
        self._in_flight[key] = running + 1
        self._idle.clear()
        # Recording and starting run in a task of the jobs' group, shielded: once
        # the row is written the job is started (and, if the server is stopping,
        # interrupted: it ends with its final event), even if this caller is
        # cancelled meanwhile; and the group does not end before it has. A
        # refused job is never recorded.
        tg = self._tg
        creation = tg.create_task(self._create(request, job_id, teams, principal, key, tg))
        result = await asyncio.shield(creation)
        if isinstance(result, Exception):
            raise result
        return result

    async def _create(
        self,
        request: JobRequest,
        job_id: str,
        teams: tuple[TeamName, ...],
        principal: Principal,
        key: str,
        tg: asyncio.TaskGroup,
    ) -> Job | Exception:
        """The job, or why not (returned, not raised: raising would end the group)."""
        started = False
        try:
            job, started = await self._start(request, job_id, teams, principal, key, tg)
            return job
        except Exception as exc:
            return exc
        finally:
            if not started:  # otherwise the job's supervisor task releases it
                self._release(key)

    def _release(self, key: str) -> None:
        left = self._in_flight.get(key, 0) - 1
        if left > 0:
            self._in_flight[key] = left
        else:
            self._in_flight.pop(key, None)
            if not self._in_flight:
                self._idle.set()

    async def _start(
        self,
        request: JobRequest,
        job_id: str,
        teams: tuple[TeamName, ...],
        principal: Principal,
        caller_key: str,
        tg: asyncio.TaskGroup,
    ) -> tuple[Job, bool]:
        """Records and starts the job; ``(job, True)``, or ``(existing, False)`` for a
        repeated ``request_id``."""
        now = utc_now()
        job = Job(
            job_id=job_id,
            brief=request.brief,
            teams={team: TeamRun(team) for team in teams},
            create_time=now,
            update_time=now,
            request_id=request.request_id,
            owner=principal.sub,
        )
        # The job's first events go in its own commit where the store can: a job
        # created alone (as CreateJob calls arrive) then pays one commit, not two.
        announced = self._store.records_opening
        publish = self._broadcaster.publish
        actors = [
            TeamActor(job_id, team, self._providers(team), request.brief, publish,
                      announced=announced)
            for team in teams
        ]
        supervisor = JobSupervisor(
            job_id, actors, publish, deadline=self._job_deadline, announced=announced
        )
        opening = _opened(job, supervisor.opening()) if announced else []
        stored, created = await self._store.create_job(job, opening)
        if not created:
            if (
                stored.owner != principal.sub
                or stored.brief != request.brief
                or tuple(stored.teams) != teams
                or (request.job_id and stored.job_id != request.job_id)
            ):
                raise FailedPrecondition(
                    f"request_id {request.request_id!r} was already used for a different "
                    "request: use a new request_id"
                )
            return stored, False
        self._broadcaster.open_job(job.copy(), opening)
        self._supervisors[job_id] = supervisor
        if self._stop.is_set():  # stopping while we were writing: it ends at once
            supervisor.interrupt()
        tg.create_task(self._supervise(supervisor, caller_key), context=job_context(job_id))
        metrics.job_started()
        log.info("job %s started: teams %s", job_id, ", ".join(teams), extra={"job_id": job_id})
        return job, True

    async def _supervise(self, supervisor: JobSupervisor, caller_key: str) -> None:
        """The top frame of a job's task; nobody else awaits it.

        An unexpected error in a supervisor is logged here and does not take
        down the other jobs sharing the TaskGroup.
        """
        closed_here = False  # the job's final event is this frame's, not the supervisor's
        try:
            try:
                await supervisor.run()
            except Exception as exc:
                log.exception("supervisor of job %s crashed", supervisor.job_id)
                if not supervisor.announced_final:
                    # Whatever happened, the job ends with its final event: the
                    # path start-up recovery takes for jobs a crash left running.
                    closed_here = True
                    await close_as_failed(
                        self._broadcaster.publish, supervisor.job_id,
                        supervisor.unfinished_teams(),
                        f"internal error: the job's supervisor failed ({type(exc).__name__})",
                    )
        finally:
            del self._supervisors[supervisor.job_id]
            # No await since the final event was queued: the place is free before
            # anyone can see the job end (test_jobs_in_flight_without_auth...).
            self._release(caller_key)
            state = JobState.FAILED if closed_here else supervisor.state
            log.info("job %s finished: %s", supervisor.job_id, state.value)
            metrics.job_finished(state)

    async def _load(
        self, job_id: str, principal: Principal, view: JobView = JobView.BASIC
    ) -> Job:
        """The job (with the thoughts ``view`` asks for), if ``principal`` may see it.

        A job the caller may not see answers exactly like a missing one, so a
        token cannot probe which job ids others use.
        """
        check_job_id(job_id)
        principal.check_job_id(job_id)
        job = await self._store.get_job(job_id, thought_limit(view))
        if job is None or not principal.may_see(job.job_id, job.owner):
            raise NotFound(f"job {job_id!r} does not exist")
        return job

    async def get(
        self, job_id: str, *, principal: Principal, view: JobView = JobView.DEFAULT
    ) -> Job:
        principal.require(Scope.READ)
        return await self._load(job_id, principal, view)

    async def authorize_watch(self, job_id: str, *, principal: Principal) -> None:
        """Raises unless ``principal`` may subscribe to ``job_id``'s events.

        A token for all jobs (or no auth: anonymous), or for exactly this job,
        may wait for a job that does not exist yet; a token for its own jobs
        needs the job to exist and be its own (a job that does not exist is
        nobody's yet), so it gets :class:`NotFound`.
        """
        principal.require(Scope.READ)
        check_job_id(job_id)
        principal.check_job_id(job_id)
        if principal.job is None and not principal.all_jobs:
            await self._load(job_id, principal)

    @property
    def epoch(self) -> str:
        """The store's current lifetime (:attr:`Store.epoch`): a gateway hands it to
        clients beside the sequence numbers (``connected``, the snapshot, ``Job``),
        and they send it back with ``since`` to resume.

        Read it before reading the job a client is given: should the lifetime
        change in between, the client holds the older epoch and its resume fails
        safe (history gone) instead of being trusted.
        """
        return self._store.epoch

    async def watch(
        self, job_id: str, since: int, *, principal: Principal, epoch: str = "",
        deltas: bool = True,
    ) -> Subscription:
        """The one subscribe/resume rule, for every gateway: a registered
        subscription to ``job_id``'s events after ``since``.

        - ``since`` = 0: the whole history, then live events. A job that does not
          exist yet is waited for (on both planes), if the caller may wait for
          it (:meth:`authorize_watch`).
        - ``since`` > 0 resumes: :class:`HistoryGone` if this server keeps no
          such job (retention removed it, or it never existed here);
          :class:`SinceTooLarge` if ``since`` is past the job's last ``seq``.
        - ``epoch`` (the position's, as :attr:`epoch` gave it) other than the
          store's current one: :class:`HistoryGone`, whatever ``since`` is, as
          the store's data was lost since and ``job_id`` may name another job
          now. Without an epoch (``""``) a position is trusted by ``seq`` alone:
          after such a loss, a job created again under the same id would be
          resumed as if it were the old one.
        - :class:`Unavailable` while shutting down.
        - ``deltas`` false: no ``code_delta`` events (their seqs are skipped, not
          renumbered; resuming after the last seq received is still exact).

        Checked after registering, so a job removed in between (or a lost data
        set noticed in between) still ends the subscription (with
        :class:`HistoryGone`) rather than leaving a silent wait. The caller
        owns the subscription: use it as a context manager.
        """
        await self.authorize_watch(job_id, principal=principal)
        if since < 0:
            raise InvalidArgument("since must be 0 or more (the last seq you received)")
        check_epoch(epoch)
        subscription = self._broadcaster.subscribe(job_id, since, deltas=deltas)
        try:
            await self._check_resume(job_id, since, epoch, subscription.epoch)
        except BaseException:
            subscription.close()
            raise
        return subscription

    async def _check_resume(
        self, job_id: str, since: int, epoch: str = "", current: str = ""
    ) -> None:
        """Raises if resuming ``job_id`` after ``since`` in ``epoch`` cannot work;
        ``current`` is the store's epoch the subscription was registered under (a
        later change is the broadcaster's to report: :meth:`Broadcaster.data_lost`)."""
        if epoch and epoch != current:
            raise HistoryGone.other_epoch(job_id, since, epoch, current)
        if since == 0:
            return  # a new subscriber; an unknown job is waited for
        # The caller's right to the job was checked by watch.
        job = await self._store.get_job(job_id, thought_limit(JobView.BASIC))
        if job is None:
            raise HistoryGone(job_id, since)
        if since > job.last_sequence:
            raise SinceTooLarge(job_id, since, job.last_sequence)

    def authorize_list(self, *, principal: Principal) -> None:
        """Raises unless ``principal`` may list jobs. A gateway calls it before it
        decodes the page token, so a caller who may not list learns only that."""
        principal.require(Scope.READ)

    async def list(
        self, page_size: int, before: int | None, *, principal: Principal,
        view: JobView = JobView.DEFAULT,
    ) -> tuple[list[Job], int | None]:
        """A page of the jobs ``principal`` may read, newest first, and the cursor of
        the next page (None: this was the last). ``before`` is the cursor a previous
        page returned, None for the first page; a gateway carries it in its page
        token (``chimera.wire``)."""
        self.authorize_list(principal=principal)
        if page_size < 0 or page_size > MAX_PAGE_SIZE:
            raise InvalidArgument(
                f"page_size must be between 1 and {MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE})"
            )
        if principal.job is not None:
            if before is not None:  # the one page has been returned
                return [], None
            job = await self._store.get_job(principal.job, thought_limit(view))
            return ([job] if job is not None else []), None
        owner = None if principal.all_jobs else principal.sub
        return await self._store.list_jobs(
            page_size or DEFAULT_PAGE_SIZE, before, owner, thought_limit(view)
        )

    async def cancel(self, job_id: str, *, principal: Principal) -> Job:
        """Cancels a running job and returns it once its final event is recorded.

        Cancelling a cancelled job returns it unchanged; a job that finished
        otherwise cannot be cancelled.
        """
        principal.require(Scope.CANCEL)
        job = await self._load(job_id, principal)
        supervisor = self._supervisors.get(job_id)
        relayed = False
        if supervisor is not None:
            async with self._broadcaster.subscribe(job_id) as subscription:
                supervisor.cancel()
                async for _ in subscription:
                    pass  # ends after the job's final event, which is then stored
        elif self._relay is not None and job.state is JobState.RUNNING:
            relayed = True
            await self._cancel_elsewhere(job)
        job = await self._load(job_id, principal, JobView.DEFAULT)
        if job.state is JobState.RUNNING:
            raise FailedPrecondition(f"job {job_id!r} is still stopping: try again")
        if job.state is not JobState.CANCELLED and supervisor is None and not relayed:
            raise FailedPrecondition(
                f"job {job_id!r} already finished as {job.state.value}; only running jobs "
                "can be cancelled"
            )
        return job

    async def _cancel_elsewhere(self, job: Job) -> None:
        """Relays the cancel to the job's process, repeated until the job's final
        event arrives (a relayed message may be lost; cancelling twice is harmless)."""
        assert self._relay is not None
        relay = self._relay

        async def nag() -> None:
            while True:
                await relay.request_cancel(job.job_id)
                await asyncio.sleep(CANCEL_RELAY_INTERVAL)

        subscription = self._broadcaster.subscribe(job.job_id, job.last_sequence)
        async with subscription, asyncio.TaskGroup() as tg:
            nagging = tg.create_task(nag())
            try:
                async for _ in subscription:
                    pass  # ends after the job's final event
            finally:
                nagging.cancel()

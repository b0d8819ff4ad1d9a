"""Durable inspection records: one row per accepted image, through SQLAlchemy (SQLite or PostgreSQL).

A row holds the model's call (the Inspection JSON and its indexed fields), where the image lives in
the :class:`~defectkit.serve.store.ContentStore`, and the operator's review beside the model's
verdict, never over it. SQLite runs in WAL mode so readers (the review page) never block the
writer; with ``durable`` it also syncs at every commit (``synchronous=FULL``), otherwise a commit
survives the process being killed but not the machine losing power.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    Integer,
    String,
    Text,
    case,
    create_engine,
    event,
    func,
    inspect,
    select,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool

ReviewVerdict = Literal["ok", "defect"]


class Base(DeclarativeBase):
    pass


class InspectionRecord(Base):
    __tablename__ = "inspections"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    station: Mapped[str | None] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(200))
    image_name: Mapped[str] = mapped_column(String(300))  # the client's label; never used as a path
    image_sha256: Mapped[str] = mapped_column(String(64), index=True)
    image_format: Mapped[str] = mapped_column(String(10))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    verdict: Mapped[str] = mapped_column(String(10), index=True)
    score: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    defect_class: Mapped[str | None] = mapped_column(String(200))
    surface: Mapped[str | None] = mapped_column(String(200), index=True)
    result: Mapped[dict[str, Any]] = mapped_column(JSON)  # the Inspection, as returned
    overlay_sha256: Mapped[str | None] = mapped_column(String(64))
    reviewed: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    review_verdict: Mapped[str | None] = mapped_column(String(10))
    review_class: Mapped[str | None] = mapped_column(String(200))
    review_note: Mapped[str | None] = mapped_column(Text)
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class RecordFilter:
    verdict: str | None = None
    surface: str | None = None
    reviewed: bool | None = None
    since: datetime | None = None
    until: datetime | None = None


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime; naive ones are taken to be UTC already.

    SQLite keeps no offset (SQLAlchemy writes the wall time), so every datetime is converted to
    UTC before it is stored or compared, and naive ones read back are UTC.
    """
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class NotARecordStore(ValueError):
    """A database opened read-only that holds no inspection records' table."""


class DatabaseUnavailable(ValueError):
    """A database URL that cannot be opened: malformed, its driver missing, not a database, or
    out of reach. The message names the URL (password hidden) and the reason."""


# user:password@ in a URL SQLAlchemy cannot parse (postgresql//u:p@h/db, a typo'd scheme).
_CREDENTIALS = re.compile(r"(?<=[:/])([^:/@\s]*):[^@/\s]*@")


def shown_url(url: str) -> str:
    """``url`` for a message or a log line: its password hidden (also in a URL that does not parse)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # a port that is not a number is a ValueError
        return _CREDENTIALS.sub(r"\1:***@", url)


def _unavailable(url: str, error: Exception) -> DatabaseUnavailable:
    lines = str(getattr(error, "orig", None) or error).strip().splitlines()
    reason = lines[0] if lines else type(error).__name__
    return DatabaseUnavailable(f"{shown_url(url)}: cannot open the database ({reason})")


def check_database_url(url: str) -> None:
    """Parse ``url`` and load its driver without connecting (nothing is created): a malformed URL
    or a missing driver fails in a second, before a model loads (:class:`DatabaseUnavailable`)."""
    try:
        create_engine(url).dispose()
    # A missing driver is an ImportError from create_engine; a port that is no number a ValueError.
    except (SQLAlchemyError, ImportError, ValueError) as error:
        raise _unavailable(url, error) from None


class RecordStore:
    """All database access of the service (and of ``defectkit reviews export``)."""

    def __init__(self, url: str, durable: bool = True, read_only: bool = False) -> None:
        """``read_only`` (``reviews export``) opens an existing service database and changes
        nothing in it: no tables created, SQLite's journal mode left as it is; a database without
        the records' table is refused (:class:`NotARecordStore`). One that cannot be opened at all
        is a :class:`DatabaseUnavailable`."""
        self.url = url
        has_table = True
        try:
            self.engine: Engine = self._engine(url, durable, read_only)
            if read_only:
                has_table = inspect(self.engine).has_table(InspectionRecord.__tablename__)
            else:
                Base.metadata.create_all(self.engine)
        except (SQLAlchemyError, ImportError, ValueError) as error:
            raise _unavailable(url, error) from None
        if read_only and not has_table:
            self.engine.dispose()
            raise NotARecordStore(
                f"{shown_url(url)}: not a defectkit service database "
                f"(no {InspectionRecord.__tablename__} table)"
            )
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @staticmethod
    def _engine(url: str, durable: bool, read_only: bool) -> Engine:
        if not url.startswith("sqlite"):
            return create_engine(url, pool_pre_ping=True)
        arguments: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": 30}}
        if url in ("sqlite://", "sqlite:///:memory:"):
            # One shared connection: otherwise each thread would get its own, empty, database.
            arguments["poolclass"] = StaticPool
        elif not read_only:
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, **arguments)
        if read_only:
            return engine

        @event.listens_for(engine, "connect")
        def _pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            cursor.close()

        return engine

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    def add(self, record: InspectionRecord) -> InspectionRecord:
        """Commit ``record``; when this returns, the record survives the process being killed."""
        with self.session() as session:
            session.add(record)
        return record

    def get(self, record_id: str) -> InspectionRecord | None:
        with self._sessions() as session:
            return session.get(InspectionRecord, record_id)

    def set_overlay(self, record_id: str, sha256: str) -> None:
        with self.session() as session:
            record = session.get(InspectionRecord, record_id)
            if record is not None:
                record.overlay_sha256 = sha256

    def review(
        self, record_id: str, verdict: ReviewVerdict, defect_class: str | None, note: str | None
    ) -> InspectionRecord | None:
        with self.session() as session:
            record = session.get(InspectionRecord, record_id)
            if record is None:
                return None
            record.reviewed = True
            record.review_verdict = verdict
            record.review_class = defect_class if verdict == "defect" else None
            record.review_note = note
            record.reviewed_at = utcnow()
            return record

    def query(
        self, where: RecordFilter, offset: int = 0, limit: int = 50
    ) -> tuple[list[InspectionRecord], int]:
        """One page of records, newest first, and how many match in all."""
        statement = select(InspectionRecord)
        if where.verdict is not None:
            statement = statement.where(InspectionRecord.verdict == where.verdict)
        if where.surface is not None:
            statement = statement.where(InspectionRecord.surface == where.surface)
        if where.reviewed is not None:
            statement = statement.where(InspectionRecord.reviewed == where.reviewed)
        if where.since is not None:
            statement = statement.where(InspectionRecord.created >= as_utc(where.since))
        if where.until is not None:
            statement = statement.where(InspectionRecord.created < as_utc(where.until))
        with self._sessions() as session:
            total = session.scalar(select(func.count()).select_from(statement.subquery())) or 0
            page = statement.order_by(InspectionRecord.created.desc(), InspectionRecord.id)
            return list(session.scalars(page.offset(offset).limit(limit))), int(total)

    def review_queue(self, limit: int = 50) -> list[InspectionRecord]:
        """Unreviewed records, most informative first: unknowns, then scores nearest the threshold."""
        unknown_first = case((InspectionRecord.verdict == "unknown", 0), else_=1)
        margin = func.abs(InspectionRecord.score - InspectionRecord.threshold)
        statement = (
            select(InspectionRecord)
            .where(InspectionRecord.reviewed.is_(False))
            .order_by(unknown_first, margin, InspectionRecord.created)
            .limit(limit)
        )
        with self._sessions() as session:
            return list(session.scalars(statement))

    def reviewed(self) -> Sequence[InspectionRecord]:
        statement = select(InspectionRecord).where(InspectionRecord.reviewed.is_(True))
        with self._sessions() as session:
            return list(session.scalars(statement.order_by(InspectionRecord.created)))

    def count(self) -> int:
        with self._sessions() as session:
            return int(session.scalar(select(func.count()).select_from(InspectionRecord)) or 0)

    def ids(self) -> set[str]:
        with self._sessions() as session:
            return set(session.scalars(select(InspectionRecord.id)))

    def close(self) -> None:
        self.engine.dispose()

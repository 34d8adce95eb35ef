"""Experiment records and feedback: the record built per request, the store (SQLite or
PostgreSQL) and the writer that feeds it off the request path."""

from gateway.records.model import ExperimentSummary, FeedbackRecord, RecordStore, RequestRecord

__all__ = ["ExperimentSummary", "FeedbackRecord", "RecordStore", "RequestRecord"]

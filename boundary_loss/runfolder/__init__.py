"""The run folder main.py writes: its schema and readers (`schema`), its writer (`writer`) and the
ranking of epochs (`ranking`)."""

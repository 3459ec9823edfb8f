"""Who is called: CSV files read as records (`csvsource`), numbers normalised in bulk
(`bulkphone`), records turned into contact rows or rejects (`rows`), the import itself
(`importer`), and the do-not-call list (`dnc`). Above `dialer.campaigns`."""

"""The score report of a layer (`report`, `report_figures`, `range_figures`), the unit pages
(`unit_pages`, `unit_strips`) and the end-of-run summary and headline numbers (`run_summary`).

No imports here: a rule importing any module below hashes this file too (nexplain.codeversion).
"""

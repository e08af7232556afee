"""The data policy: what each field is (classification), what each purpose may use and on
what lawful basis, and how long each category is kept."""

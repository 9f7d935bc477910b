from samner_dspy.archetypes import (
    archetype_definitions,
    archetype_names,
    load_archetypes,
    match_archetype,
    project_schema,
    project_type,
)


def test_the_fourteen_archetypes_with_definitions():
    names = archetype_names()
    assert len(names) == 14 == len(set(names))
    assert names[0] == "Person" and names[-1] == "Misc"
    assert all(len(definition) > 40 for definition in archetype_definitions().values())


def test_projection_follows_appendix_b_and_ignores_case_and_separators():
    assert project_type("actor") == "Person"
    assert project_type("Restaurant Name") == "Food"
    assert project_type("restaurant_name") == "Food"
    assert project_type("GENE") == project_type("gene") == "Medicine"
    assert project_type("vehicle model") == "Vehicle"
    assert project_type("astronomical object") == "Science"
    assert project_type("law") == "Political"


def test_unknown_types_project_to_misc():
    assert project_type("spaceship captain") == "Misc"
    assert project_type("") == "Misc"


def test_every_listed_fine_grained_type_projects_to_its_archetype():
    for archetype in load_archetypes():
        for fine in archetype.fine_grained_types:
            assert project_type(fine) == archetype.name, fine


def test_project_schema_deduplicates_in_order():
    assert project_schema(["person", "song", "actor", "unknown thing", "movie"]) == ["Person", "Creative_Work", "Misc"]


def test_match_archetype_is_tolerant_but_closed():
    assert match_archetype("computer science") == "Computer_Science"
    assert match_archetype("PERSON") == "Person"
    assert match_archetype("Planet") is None
    assert match_archetype(3) is None

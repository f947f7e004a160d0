//! Round trips of flattened schemas and batches, and the malformed inputs they must refuse.

use super::*;
use arrow_array::builder::{Int32Builder, ListBuilder, StringBuilder};
use arrow_array::{Array, Float64Array, Int32Array, Int64Array, StringArray, StructArray};

fn owned(view: &ColumnView<'_>) -> ColumnParts {
    ColumnParts {
        len: view.len,
        offset: view.offset,
        validity: view.validity.map(|(b, o)| (Buffer::from(b.to_vec()), o)),
        buffers: view.buffers.iter().map(|b| Buffer::from(b.to_vec())).collect(),
    }
}

fn round_trip(batch: &RecordBatch) -> Result<RecordBatch, BatchError> {
    let flat = flatten_schema(batch.schema_ref())?;
    let schema = Arc::new(unflatten_schema(flat, batch.schema().metadata().clone().into())?);
    assert_eq!(&schema, batch.schema_ref());
    let fb = FlatBatch::new(batch);
    let parts = fb.views().iter().map(owned).collect();
    assemble_batch(&schema, batch.num_rows() as u64, parts)
}

fn nested_batch() -> RecordBatch {
    let mut list = ListBuilder::new(Int32Builder::new());
    list.values().append_value(1);
    list.values().append_value(2);
    list.append(true);
    list.append(false);
    list.values().append_value(3);
    list.append(true);
    let list = list.finish();
    let strukt = StructArray::from(vec![
        (
            Arc::new(Field::new("x", DataType::Float64, false)),
            Arc::new(Float64Array::from(vec![1.5, 2.5, 3.5])) as ArrayRef,
        ),
        (
            Arc::new(Field::new("s", DataType::Utf8, true)),
            Arc::new(StringArray::from(vec![Some("a"), None, Some("ccc")])) as ArrayRef,
        ),
    ]);
    let schema = Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("tags", list.data_type().clone(), true),
        Field::new("point", strukt.data_type().clone(), false),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![Arc::new(Int64Array::from(vec![1, 2, 3])), Arc::new(list), Arc::new(strukt)],
    )
    .unwrap()
}

use arrow_array::ArrayRef;

#[test]
fn nested_batch_round_trips() {
    let batch = nested_batch();
    assert_eq!(round_trip(&batch).unwrap(), batch);
}

#[test]
fn sliced_batch_round_trips_with_offsets() {
    let batch = nested_batch().slice(1, 2);
    let back = round_trip(&batch).unwrap();
    assert_eq!(back, batch);
    assert_eq!(back.num_rows(), 2);
}

#[test]
fn flattening_borrows_the_batch_buffers() {
    let a = Int32Array::from_iter_values(0..1000);
    let ptr = a.values().inner().as_ptr();
    let batch = RecordBatch::try_from_iter([("a", Arc::new(a) as ArrayRef)]).unwrap();
    let fb = FlatBatch::new(&batch);
    let views = fb.views();
    assert_eq!(views[0].buffers[0].as_ptr(), ptr, "flattening must not copy");
    assert_eq!(fb.byte_len(), 4000);
}

fn utf8_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, true)]))
}

#[test]
fn invalid_utf8_is_refused() {
    let parts = vec![ColumnParts {
        len: 1,
        offset: 0,
        validity: None,
        buffers: vec![Buffer::from_slice_ref([0i32, 2]), Buffer::from(vec![0xff_u8, 0xfe])],
    }];
    let err = assemble_batch(&utf8_schema(), 1, parts).unwrap_err();
    assert!(err.to_string().contains("column `s`"), "{err}");
    assert!(err.to_string().to_lowercase().contains("utf-8") || err.to_string().contains("utf8"), "{err}");
}

#[test]
fn offsets_past_the_values_are_refused() {
    let parts = vec![ColumnParts {
        len: 1,
        offset: 0,
        validity: None,
        buffers: vec![Buffer::from_slice_ref([0i32, 1_000_000]), Buffer::from(b"abc".to_vec())],
    }];
    assert!(matches!(assemble_batch(&utf8_schema(), 1, parts), Err(BatchError::InvalidColumn { .. })));
}

#[test]
fn short_value_buffer_is_refused() {
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
    let parts = vec![ColumnParts { len: 10, offset: 0, validity: None, buffers: vec![Buffer::from(vec![0u8; 8])] }];
    let err = assemble_batch(&schema, 10, parts).unwrap_err();
    assert!(err.to_string().contains("column `v`"), "{err}");
}

#[test]
fn huge_lengths_do_not_overflow() {
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
    let parts = vec![ColumnParts { len: u64::MAX, offset: u64::MAX, validity: None, buffers: vec![] }];
    assert!(assemble_batch(&schema, 1, parts).is_err());
    let parts = vec![ColumnParts {
        len: 4,
        offset: 0,
        validity: Some((Buffer::from(vec![0xffu8]), u64::MAX - 1)),
        buffers: vec![Buffer::from(vec![0u8; 32])],
    }];
    assert!(assemble_batch(&schema, 4, parts).is_err());
    assert!(assemble_batch(&schema, u64::MAX, vec![]).is_err());
}

#[test]
fn short_validity_bitmap_is_refused() {
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int32, true)]));
    let parts = vec![ColumnParts {
        len: 20,
        offset: 0,
        validity: Some((Buffer::from(vec![0xffu8]), 0)),
        buffers: vec![Buffer::from(vec![0u8; 80])],
    }];
    let err = assemble_batch(&schema, 20, parts).unwrap_err();
    assert!(err.to_string().contains("validity bitmap"), "{err}");
}

#[test]
fn nulls_in_a_non_nullable_column_are_refused() {
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int32, false)]));
    let parts = vec![ColumnParts {
        len: 2,
        offset: 0,
        validity: Some((Buffer::from(vec![0b01u8]), 0)),
        buffers: vec![Buffer::from(vec![0u8; 8])],
    }];
    assert!(assemble_batch(&schema, 2, parts).is_err());
}

#[test]
fn wrong_column_count_or_row_count_is_refused() {
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int32, false)]));
    let col = || ColumnParts { len: 2, offset: 0, validity: None, buffers: vec![Buffer::from(vec![0u8; 8])] };
    assert!(assemble_batch(&schema, 2, vec![]).unwrap_err().to_string().contains("too few columns"));
    assert!(assemble_batch(&schema, 2, vec![col(), col()]).unwrap_err().to_string().contains("more column"));
    assert!(assemble_batch(&schema, 3, vec![col()]).is_err());
}

#[test]
fn misaligned_buffers_are_realigned_not_rejected() {
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
    let bytes = Buffer::from(vec![0u8; 17]).slice(1); // 16 bytes at an odd address
    let parts = vec![ColumnParts { len: 2, offset: 0, validity: None, buffers: vec![bytes] }];
    let batch = assemble_batch(&schema, 2, parts).unwrap();
    assert_eq!(batch.column(0).len(), 2);
}

#[test]
fn malformed_schemas_are_refused() {
    let f = |name: &str, dt: DataType, children| FlatField {
        name: name.into(),
        data_type: dt,
        nullable: true,
        children,
        metadata: HashMap::new(),
    };
    let list_shell = DataType::List(Arc::new(Field::new("item", DataType::Null, true)));
    // A list announcing a child that never comes.
    assert!(unflatten_schema(vec![f("l", list_shell.clone(), 1)], HashMap::new()).is_err());
    // A list with two children.
    assert!(
        unflatten_schema(
            vec![f("l", list_shell, 2), f("a", DataType::Int32, 0), f("b", DataType::Int32, 0)],
            HashMap::new()
        )
        .is_err()
    );
    // A primitive with a child.
    assert!(unflatten_schema(vec![f("p", DataType::Int32, 1), f("a", DataType::Int32, 0)], HashMap::new()).is_err());
    // A tower of lists deeper than the limit.
    let deep: Vec<_> = (0..200)
        .map(|i| f(&format!("l{i}"), DataType::List(Arc::new(Field::new("item", DataType::Null, true))), 1))
        .chain([f("leaf", DataType::Int32, 0)])
        .collect();
    assert!(unflatten_schema(deep, HashMap::new()).unwrap_err().to_string().contains("nesting"));
}

#[test]
fn unsupported_types_are_named() {
    let schema = Schema::new(vec![Field::new(
        "d",
        DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
        true,
    )]);
    let err = flatten_schema(&schema).unwrap_err();
    assert!(err.to_string().contains("field `d`"), "{err}");
}

#[test]
fn strings_round_trip() {
    let mut b = StringBuilder::new();
    b.append_value("héllo");
    b.append_null();
    let batch = RecordBatch::try_from_iter([("s", Arc::new(b.finish()) as ArrayRef)]).unwrap();
    assert_eq!(round_trip(&batch).unwrap(), batch);
}

fn flat(name: &str, data_type: DataType) -> FlatField {
    FlatField { name: name.into(), data_type, nullable: true, children: 0, metadata: HashMap::new() }
}

#[test]
fn schemas_arrow_or_the_sinks_cannot_handle_are_refused() {
    use arrow_schema::TimeUnit::*;
    let item = || Arc::new(Field::new("item", DataType::Int8, true));
    for (data_type, needle) in [
        (DataType::Time32(Microsecond), "time32 holds only"),
        (DataType::Time32(Nanosecond), "time32 holds only"),
        (DataType::Time64(Second), "time64 holds only"),
        (DataType::Time64(Millisecond), "time64 holds only"),
        (DataType::FixedSizeBinary(-5), "byte width -5 is negative"),
        (DataType::Decimal128(0, 100), "precision cannot be 0"),
        (DataType::Decimal128(39, 0), "precision 39 is greater than max 38"),
        (DataType::Decimal128(10, 20), "scale 20 is greater than precision 10"),
        (DataType::Decimal256(90, -100), "precision 90 is greater than max 76"),
        (DataType::Timestamp(Second, Some("Mars/Olympus".into())), "time zone `Mars/Olympus`"),
    ] {
        let err = unflatten_schema(vec![flat("x", data_type.clone())], HashMap::new()).unwrap_err().to_string();
        assert!(err.contains("field `x`") && err.contains(needle), "{data_type}: {err}");
        let err = validate_schema(&Schema::new(vec![Field::new("x", data_type.clone(), true)])).unwrap_err();
        assert!(err.to_string().contains(needle), "{data_type}: {err}");
    }
    // A negative list size, and a bad type nested in a struct.
    let mut list = flat("l", DataType::FixedSizeList(item(), -1));
    list.children = 1;
    let err = unflatten_schema(vec![list, flat("item", DataType::Int8)], HashMap::new()).unwrap_err();
    assert!(err.to_string().contains("list size -1 is negative"), "{err}");
    let nested =
        Schema::new(vec![Field::new_struct("s", vec![Field::new("t", DataType::Time32(Nanosecond), true)], true)]);
    assert!(validate_schema(&nested).unwrap_err().to_string().contains("field `t`"));
    // What Arrow handles is accepted.
    for data_type in [
        DataType::Time32(Millisecond),
        DataType::Time64(Nanosecond),
        DataType::FixedSizeBinary(0),
        DataType::Decimal128(38, -5),
        DataType::Decimal256(76, 76),
        DataType::Timestamp(Nanosecond, Some("+05:30".into())),
        DataType::Timestamp(Nanosecond, Some("UTC".into())),
        DataType::Timestamp(Millisecond, Some("Europe/Paris".into())),
        DataType::Timestamp(Nanosecond, None),
    ] {
        unflatten_schema(vec![flat("x", data_type.clone())], HashMap::new())
            .unwrap_or_else(|e| panic!("{data_type}: {e}"));
    }
}

#[test]
fn rows_that_cost_no_bytes_are_bounded() {
    let nulls = Arc::new(Schema::new(vec![Field::new("n", DataType::Null, true)]));
    let col = |len| ColumnParts { len, offset: 0, validity: None, buffers: vec![] };
    // 2^40 rows of a Null column and of no column at all.
    let err = assemble_batch_bounded(&nulls, 1 << 40, vec![col(1 << 40)], 1000).unwrap_err();
    assert_eq!(err, BatchError::TooManyRows { field: None, slots: 1 << 40, max: 1000 });
    let empty = Arc::new(Schema::empty());
    assert!(matches!(assemble_batch_bounded(&empty, 1 << 40, vec![], 1000), Err(BatchError::TooManyRows { .. })));
    assert_eq!(assemble_batch_bounded(&empty, 1000, vec![], 1000).unwrap().num_rows(), 1000);
    assert_eq!(assemble_batch_bounded(&nulls, 1000, vec![col(1000)], 1000).unwrap().num_rows(), 1000);
    // A Null child of a list: one row, 2^31 - 1 slots, no bytes.
    let list = Arc::new(Schema::new(vec![Field::new(
        "l",
        DataType::List(Arc::new(Field::new("item", DataType::Null, true))),
        true,
    )]));
    let offsets: Vec<u8> = [0i32, i32::MAX].iter().flat_map(|v| v.to_le_bytes()).collect();
    let parts = vec![
        ColumnParts { len: 1, offset: 0, validity: None, buffers: vec![Buffer::from(offsets)] },
        col(i32::MAX as u64),
    ];
    let err = assemble_batch_bounded(&list, 1, parts, 1000).unwrap_err();
    assert_eq!(err, BatchError::TooManyRows { field: Some("item".into()), slots: i32::MAX as u64, max: 1000 });
}

#[test]
fn fixed_size_widths_times_rows_cannot_overflow() {
    let fsl = Arc::new(Schema::new(vec![Field::new(
        "f",
        DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Int8, true)), i32::MAX),
        true,
    )]));
    let parts = vec![
        ColumnParts { len: 1 << 40, offset: 0, validity: None, buffers: vec![] },
        ColumnParts { len: 0, offset: 0, validity: None, buffers: vec![Buffer::from(Vec::<u8>::new())] },
    ];
    let err = assemble_batch(&fsl, 1 << 40, parts).unwrap_err();
    assert!(err.to_string().contains("column `f`") && err.to_string().contains("out of range"), "{err}");
    let fsb = Arc::new(Schema::new(vec![Field::new("b", DataType::FixedSizeBinary(i32::MAX), true)]));
    let parts =
        vec![ColumnParts { len: 1 << 30, offset: 0, validity: None, buffers: vec![Buffer::from(vec![0u8; 8])] }];
    assert!(assemble_batch(&fsb, 1 << 30, parts).unwrap_err().to_string().contains("out of range"));
}

/// Found by the `batch_assembly` and `guest_schema` fuzz targets: a guest
/// declaring `fixed-size-binary(-1)` made `assemble_batch` (and an empty batch
/// of the schema) panic inside arrow; so would the time units arrow's arrays
/// do not implement. The host refuses them at `open` (`unflatten_schema`)
/// and assembly refuses them whatever its caller checked.
#[test]
fn schemas_arrow_cannot_build_are_refused_not_panicked_on() {
    use arrow_schema::TimeUnit;
    for data_type in [
        DataType::FixedSizeBinary(-1_074_005_127),
        DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Int32, true)), -5),
        DataType::Time32(TimeUnit::Nanosecond),
        DataType::Time32(TimeUnit::Microsecond),
        DataType::Time64(TimeUnit::Second),
        DataType::Time64(TimeUnit::Millisecond),
    ] {
        let schema = Arc::new(Schema::new(vec![Field::new("f", data_type.clone(), true)]));
        let flat = flatten_schema(&schema).expect("a guest may declare it; the host refuses it at `open`");
        assert!(
            matches!(unflatten_schema(flat, HashMap::new()), Err(BatchError::MalformedSchema(_))),
            "{data_type} must not cross the boundary"
        );
        let column = ColumnParts { len: 1, offset: 0, validity: None, buffers: vec![Buffer::from(vec![0u8; 64])] };
        let children =
            if matches!(data_type, DataType::FixedSizeList(..)) { vec![ColumnParts::default()] } else { vec![] };
        let parts = std::iter::once(column).chain(children).collect();
        assert!(assemble_batch(&schema, 1, parts).is_err(), "{data_type}: an error, not a panic");
    }
}

/// Found by the `batch_assembly` fuzz target: a binary-view column whose
/// views buffer is one byte long made arrow's validation panic.
#[test]
fn a_partial_views_buffer_is_an_error_not_a_panic() {
    for data_type in [DataType::BinaryView, DataType::Utf8View] {
        let schema = Arc::new(Schema::new(vec![Field::new("v", data_type, false)]));
        let column = ColumnParts { len: 0, offset: 0, validity: None, buffers: vec![Buffer::from(vec![0u8])] };
        let err = assemble_batch(&schema, 96, vec![column]).expect_err("a malformed views buffer");
        assert!(err.to_string().contains("16-byte views"), "{err}");
    }
}

/// Found by the `batch_assembly` fuzz target: a list whose offsets buffer
/// ended in a partial offset (5 bytes) made arrow's validation panic. The
/// partial element is dropped; the whole ones are checked as usual.
#[test]
fn a_trailing_partial_element_is_dropped_not_panicked_on() {
    let item = Arc::new(Field::new("item", DataType::Null, true));
    let schema = Arc::new(Schema::new(vec![Field::new("l", DataType::List(item), true)]));
    let list =
        |offsets: Vec<u8>| ColumnParts { len: 1, offset: 0, validity: None, buffers: vec![Buffer::from(offsets)] };
    let null_child = ColumnParts { len: 2, offset: 0, validity: None, buffers: vec![] };
    // Offsets [0, 2] and one stray byte: a list of one row holding two nulls.
    let batch = assemble_batch(&schema, 1, vec![list(vec![0, 0, 0, 0, 2, 0, 0, 0, 9]), null_child.clone()])
        .expect("the whole offsets are valid");
    assert_eq!(batch.column(0).as_any().downcast_ref::<arrow_array::ListArray>().unwrap().value_length(0), 2);
    // Only one whole offset plus a partial one: too short for one row.
    let err = assemble_batch(&schema, 1, vec![list(vec![0, 0, 0, 0, 2]), null_child]).expect_err("one offset");
    assert!(err.to_string().contains("l"), "{err}");
    // Values of a fixed-width type with a stray byte: the whole values are used.
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)]));
    let column = ColumnParts { len: 1, offset: 0, validity: None, buffers: vec![Buffer::from(vec![7u8, 0, 0, 0, 1])] };
    let batch = assemble_batch(&schema, 1, vec![column]).expect("one whole value");
    assert_eq!(batch.column(0).as_any().downcast_ref::<Int32Array>().unwrap().value(0), 7);
}
